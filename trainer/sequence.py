"""`edgekit train sequence`: an activity classifier from CSV frames, into a bundle.

Steps: read the CSVs → cut label-pure windows → split by group → diagnose (printed before training)
→ normalise with training statistics → fit through the engine → evaluate on the test groups →
write the bundle the exporter and the device read.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgekit.bundle import check_name
from edgekit.errors import UserError
from edgekit.trainer import seq_data
from edgekit.trainer.models import ARCHS
from edgekit.trainer.seq_diagnose import (
    Diagnosis,
    check_labels,
    check_windows,
    diagnose,
    print_diagnosis,
    warn_shared_person,
)

if TYPE_CHECKING:
    import torch

    from edgekit.bundle import Bundle
    from edgekit.trainer.engine import FitResult

log = logging.getLogger(__name__)

TASK = "sequence-classification"
SEQ_ARCHS: dict[str, str] = {n.removeprefix("seq_"): n for n, a in ARCHS.items() if a.task == TASK}
"""Short name users type (`lstm`) → row of the architecture table (`seq_lstm`)."""


class SequenceConfig(BaseModel):
    """Everything `edgekit train sequence` needs; built once by the CLI."""

    model_config = ConfigDict(extra="forbid")

    data: Path
    """Folder of CSV files, one per recording."""
    name: str = "sequence"
    """Bundle name (models/<name>/vN; checked before any data is read, since runs/<name>/ holds the
    checkpoints)."""
    features: list[str] | None = None
    """Feature columns in model order; default: every column but the label, group and time columns."""
    label_col: str = "activity"
    """Column with the frame's label; empty cells are unlabeled frames."""
    include_labels: list[str] | None = None
    """Only these labels become classes; frames of other labels are treated as unlabeled."""
    window: int = Field(128, ge=1)
    """Frames per window (the model's fixed input length)."""
    stride: int = Field(64, ge=1)
    """Frames between window starts for evaluation and on the device."""
    train_stride: int | None = Field(None, ge=1)
    """Frames between training window starts (default: `stride`); smaller gives more training windows."""
    group_by: str = "file"
    """Split unit: `file` (each recording), `file:REGEX` (first capture of the file name), or a column."""
    test_groups: list[str] | None = None
    """Groups held out for the final report; default about 20% of the groups."""
    val_groups: list[str] | None = None
    """Groups watched by early stopping and LR reduction; default one more group when enough remain."""
    arch: str = "lstm"
    """Architecture: a key of `SEQ_ARCHS`."""
    units: list[Annotated[int, Field(ge=1)]] = Field([128, 64], min_length=1)
    """Cells per recurrent layer (channels per conv block for cnn1d)."""
    dense: int = Field(32, ge=0)
    """Width of the dense layer before the output (0: none)."""
    dropout: float = Field(0.3, ge=0, lt=1)
    """Dropout after each recurrent/conv layer."""
    dense_dropout: float = Field(0.2, ge=0, lt=1)
    """Dropout after the dense layer."""
    pool: Literal["last", "mean"] = "mean"
    """Recurrent archs: classify from the mean over all time steps, or from the last step (`last`, the
    seed's readout). On har-mini's held-out person 01 the mean scored 99% where the last step scored 83%."""
    epochs: int = Field(50, ge=1)
    """Most epochs to train."""
    batch_size: int = Field(16, ge=1)
    """Windows per training step."""
    lr: float = Field(1e-3, gt=0)
    """Adam learning rate."""
    patience: int = Field(10, ge=0)
    """Epochs without validation improvement before stopping (0: never; the LR is halved after patience/3)."""
    class_weights: Literal["auto", "none"] = "auto"
    """`auto`: weight the loss by inverse class frequency."""
    augment: bool = True
    """Random per-channel scaling and jitter of training windows."""
    select: Literal["val", "last"] = "val"
    """`val`: early stopping, LR halving and best-epoch weights by validation loss; `last`: a fixed
    number of epochs with a cosine LR decay, validation only watched (for benchmarks that must not
    choose anything on held-out people)."""
    seed: int = Field(0, ge=0)
    """Seed for the split, initialisation and batch order."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """auto, cuda or cpu."""
    run_dir: Path | None = None
    """Checkpoints and history; default runs/<name>/<hash of config and data> (a rerun on the same data resumes)."""
    resume: bool = True
    """Continue (or reuse) the run in run_dir; False starts it over."""

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        if v not in SEQ_ARCHS:
            near = difflib.get_close_matches(v, list(SEQ_ARCHS), n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise UserError(f"Unknown --arch {v!r}; choose one of {', '.join(SEQ_ARCHS)}.{hint}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @model_validator(mode="after")
    def _test_groups_not_validated_on(self) -> SequenceConfig:
        # with select="val" the val groups pick the epoch and the LR, so a test group among them would be
        # scored on the data that chose the model; with "last" they are only watched (bench/har_quality.py)
        both = sorted(set(self.val_groups or []) & set(self.test_groups or []))
        if both and self.select == "val":
            raise UserError(f"--val-groups and --test-groups both name {', '.join(both)}: early stopping would "
                            "choose the model on the groups the test reports on; name different groups.")
        return self

    @model_validator(mode="after")
    def _window_fits_the_convolutions(self) -> SequenceConfig:
        if self.arch == "cnn1d" and self.window < 2 ** len(self.units):
            raise UserError(f"--arch cnn1d halves the window in each of its {len(self.units)} blocks: --window "
                            f"{self.window} is too short; use at least {2 ** len(self.units)} or fewer --units.")
        return self

    def arch_record(self, n_features: int, n_classes: int) -> dict[str, Any]:
        """What the bundle stores in `extra["arch"]` so any tool can rebuild the model."""
        kwargs = {"n_features": n_features, "n_classes": n_classes, "units": list(self.units),
                  "dense": self.dense, "dropout": self.dropout, "dense_dropout": self.dense_dropout}
        if self.arch != "cnn1d":
            kwargs["pool"] = self.pool
        return {"name": SEQ_ARCHS[self.arch], "kwargs": kwargs}


@dataclass
class Prepared:
    """The data of one run, normalised and split."""

    labels: list[str]
    features: list[str]
    split: dict[str, list[str]]
    norm: seq_data.Normaliser
    train: seq_data.Windows
    val: seq_data.Windows
    test: seq_data.Windows
    diagnosis: Diagnosis
    skipped: list[tuple[str, str]]


def prepare(cfg: SequenceConfig, recs: list[seq_data.Recording] | None = None, show: bool = True) -> Prepared:
    """Read, window, split, diagnose and normalise (fitted on the training groups only)."""
    skipped: list[tuple[str, str]] = []
    if recs is None:
        recs, skipped = seq_data.load_folder(cfg.data, cfg.label_col, cfg.features, cfg.group_by)
    check_labels(recs, cfg.include_labels)
    if cfg.group_by == "file":
        warn_shared_person(recs)
    w = seq_data.make_windows(recs, cfg.window, cfg.stride, cfg.include_labels)
    check_windows(recs, w, cfg.window, cfg.include_labels)
    split = seq_data.split_by_group(w, cfg.test_groups, cfg.val_groups, seed=cfg.seed)
    diag = diagnose(recs, w, split, cfg.window, cfg.stride, cfg.include_labels, cfg.class_weights)
    if show:
        print_diagnosis(diag)
    if cfg.train_stride and cfg.train_stride != cfg.stride:
        train = seq_data.select(seq_data.make_windows(recs, cfg.window, cfg.train_stride, cfg.include_labels,
                                                      labels=w.labels), split["train"])
    else:
        train = seq_data.select(w, split["train"])
    norm = seq_data.Normaliser.fit(train.x)
    parts = {k: seq_data.select(w, split[k]) for k in ("val", "test")}
    for part in (train, *parts.values()):
        part.x = norm(part.x)
    return Prepared(list(w.labels), list(recs[0].features), split, norm, train, parts["val"], parts["test"],
                    diag, skipped)


class WindowData:
    """Training windows for the engine: tensors in memory, optional jitter/scaling augmentation."""

    sample_weights = None

    def __init__(self, w: seq_data.Windows, augment: bool):
        import torch

        self.x = torch.from_numpy(w.x)
        self.y = torch.from_numpy(w.y)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        x = self.x[torch.as_tensor(idx)]
        if self.augment:
            # a phone sits a little differently on each person: scale each channel, add sensor noise
            x = x * (1 + 0.1 * torch.randn(x.shape[0], 1, x.shape[2])) + 0.05 * torch.randn_like(x)
        return x.to(device), self.y[torch.as_tensor(idx)].to(device)


def predict_logits(model: torch.nn.Module, x: np.ndarray, device: Any = "cpu", batch: int = 256) -> np.ndarray:
    """Model outputs for normalised windows, in eval mode, batched."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[i:i + batch]).to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _run_dir(cfg: SequenceConfig, prep: Prepared) -> Path:
    """runs/<name>/<hash of the settings and of the windows trained and validated on>: a rerun resumes only
    on the same data (added or edited CSVs, or another split, start a new run)."""
    if cfg.run_dir is not None:
        return cfg.run_dir
    h = hashlib.sha256(cfg.model_dump_json(exclude={"resume", "run_dir", "device"}).encode())
    for part in (prep.train, prep.val):
        h.update(np.ascontiguousarray(part.x).tobytes())
        h.update(part.y.tobytes())
    return Path("runs") / cfg.name / h.hexdigest()[:10]


def fit_model(cfg: SequenceConfig, prep: Prepared, run_dir: Path | None = None) -> tuple[Any, FitResult]:
    """Train the configured architecture through the engine; returns (best model, fit result)."""
    import torch

    from edgekit.trainer.engine import FitConfig, Schedule, StepOutput, fit, seed_everything
    from edgekit.trainer.models import build

    seed_everything(cfg.seed)
    arch = cfg.arch_record(len(prep.features), len(prep.labels))
    model = build(arch["name"], **arch["kwargs"])
    cw = seq_data.class_weights(prep.train.y, len(prep.labels)) if cfg.class_weights == "auto" else None
    weight = torch.from_numpy(cw) if cw is not None else None

    def step_fn(model: torch.nn.Module, batch: Any) -> Any:
        x, y = batch
        logits = model(x)
        w = weight.to(logits.device) if weight is not None else None
        loss = torch.nn.functional.cross_entropy(logits, y, weight=w)
        return StepOutput(loss=loss, n=len(y), correct=int((logits.argmax(1) == y).sum()))

    def eval_fn(model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        logits = torch.from_numpy(predict_logits(model, prep.val.x, device))
        y = torch.from_numpy(prep.val.y)
        return {"val_loss": float(torch.nn.functional.cross_entropy(logits, y)),
                "val_acc": float((logits.argmax(1) == y).float().mean())}

    def make_optimizer(params: Any) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=cfg.lr)

    def make_schedule(opt: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> Any:
        if cfg.select == "last":
            return Schedule(torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch), "step")
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, cfg.patience // 3))
        return Schedule(plateau, interval="plateau")

    by_val = cfg.select == "val"
    fc = FitConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, patience=cfg.patience if by_val else 0,
                   restore_best=by_val, monitor="val_loss", mode="min", seed=cfg.seed, device=cfg.device,
                   resume=cfg.resume)
    result = fit(model, WindowData(prep.train, cfg.augment), step_fn, eval_fn, make_optimizer, make_schedule,
                 fc, run_dir=run_dir or _run_dir(cfg, prep), task_config=cfg.model_dump(mode="json"))
    return model.cpu().eval(), result


def evaluate(model: Any, w: seq_data.Windows, device: Any = "cpu") -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix on windows `w`."""
    from edgekit.trainer.metrics import classification_report

    pred = predict_logits(model, w.x, device).argmax(1) if len(w) else np.zeros(0, np.int64)
    return classification_report(w.y, pred, w.labels)


def train_sequence(cfg: SequenceConfig) -> Bundle:
    """The whole command: prepare, fit, evaluate, write the bundle, print the result table."""
    from edgekit.trainer.seq_bundle import print_result, write_bundle

    prep = prepare(cfg)
    model, result = fit_model(cfg, prep)
    report = evaluate(model, prep.test)
    report["split"] = prep.split
    report["diagnosis"] = prep.diagnosis.to_dict()
    report["skipped_files"] = [{"file": f, "reason": r} for f, r in prep.skipped]
    bundle = write_bundle(cfg, prep, model, report, result.history)
    print_result(report, bundle)
    return bundle
