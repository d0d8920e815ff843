"""`edgekit train waste`: a MobileNetV2 photo classifier from `DATA/<class>/`, in two phases.

Steps: scan the folder (classes = sorted subfolder names) → decode every photo once into the uint8
image cache → stratified, seeded train/val split → phase 1 trains a new head on the frozen base at
`lr` → phase 2 unfreezes the last `unfreeze` layers at lr/10 → evaluate the best model on the
validation split → write the bundle (`edgekit.trainer.waste_bundle`).

Each phase is one engine run in `runs/<name>/<config hash>/phase{1,2}`, so an interrupted command,
run again with the same options, resumes where it stopped (a finished phase is not trained again).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgekit.bundle import ImageFit, Preprocess, check_name
from edgekit.trainer.augment import AugmentConfig
from edgekit.trainer.waste_data import PhotoBatches, Prepared, predict, prepare

if TYPE_CHECKING:
    import torch

    from edgekit.bundle import Bundle
    from edgekit.trainer.engine import FitResult, Hooks

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class WeightStyle:
    """What a family of pretrained weights needs from the network and from the input."""

    padding: Literal["keras", "torch"]
    scale: float
    offset: float
    mean: list[float]
    std: list[float]
    help: str

    def preprocess(self, size: int, fit: str = "stretch") -> Preprocess:
        return Preprocess(color="RGB", resize=(size, size), fit=fit, scale=self.scale, offset=self.offset,
                          mean=list(self.mean), std=list(self.std))


STYLES: dict[str, WeightStyle] = {
    "keras": WeightStyle("keras", 1 / 127.5, -1.0, [0.0] * 3, [1.0] * 3,
                         "Keras-converted weights: input in [-1, 1], TensorFlow 'same' padding"),
    "torchvision": WeightStyle("torch", 1 / 255, 0.0, IMAGENET_MEAN, IMAGENET_STD,
                               "torchvision checkpoints: ImageNet mean/std, symmetric padding"),
}


class WasteConfig(BaseModel):
    """Everything `edgekit train waste` needs; built once by the CLI."""

    model_config = ConfigDict(extra="forbid")

    data: Path
    """Dataset folder with one subfolder of photos per class."""
    output: str = "waste"
    """Bundle name (models/<output>/vN)."""
    classes: list[str] | None = None
    """Train on these class folders only (default: all)."""
    epochs: int = Field(10, ge=1)
    """Epochs in total: phase 1 takes `head_fraction` of them, phase 2 the rest."""
    batch_size: int = Field(32, ge=1)
    """Images per step."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate of the head (AdamW, one-cycle schedule in each phase); the unfrozen base layers
    of phase 2 train at lr/10."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay."""
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    """Share of each target spread over the other classes (softer, better calibrated scores)."""
    warmup: float = Field(0.15, gt=0, lt=1)
    """Share of each phase's steps spent warming the learning rate up to its peak."""
    unfreeze: int = Field(91, ge=0)
    """Phase 2 trains the last N layers of the base: its conv, BatchNorm and ReLU6 modules, 139 in all (the
    default 91 is blocks 7-18; Keras also counts its 15 parameter-free input, pad and add layers, so the same
    N reaches a few layers further back here); 0: no phase 2, the head trains for all the epochs."""
    head_fraction: float = Field(0.3, gt=0, le=1)
    """Share of the epochs spent on phase 1 (the seed uses 30-50%)."""
    train_bn: bool = False
    """Let BatchNorm layers update their statistics while fine-tuning (default: frozen, as the seed does)."""
    int8_grid: bool = True
    """Train every convolution and the head with its weights on the per-channel int8 grid the int8 exporters use
    (straight-through, `edgekit.trainer.int8_grid`), and store the snapped weights: int8 export then keeps the
    trained weights exactly, instead of rounding weights that fine-tuning moved off the grid."""
    sam: float = Field(0.0, ge=0)
    """Sharpness-aware minimisation radius (`edgekit.trainer.sharpness`; 0: off). Each step's gradient is taken
    this far uphill, which favours flat minima, at twice the time per step. On waste-mini 0.05 scored 80.0% and
    76.4% 5-fold on two partitions where the default scored 78.9% and 77.5%: no gain there, so it is off."""
    views: int = Field(0, ge=0)
    """0 (default): augment every photo afresh each epoch. N > 0: run the frozen layers once on N augmented
    copies of each training photo and reuse the stored activations every epoch (`edgekit.trainer.waste_views`:
    ~2x faster epochs on a CPU and reusable across runs, but 1.9 points lower 5-fold accuracy on waste-mini
    with 16); ignored with --train-bn."""
    num_workers: int = Field(4, ge=1)
    """Threads that decode photos into the image cache."""
    img_size: int = Field(224, ge=32)
    """Square input size in pixels."""
    fit: ImageFit = "stretch"
    """How photos of other shapes become square (`edgekit.edge.preprocess.FITS`), recorded in the bundle so
    the device does the same. pad keeps the whole photo undistorted, but on waste-mini (portrait photos) it
    measured 77.2% 5-fold against stretch's 78.3%, so stretch stays the default."""
    val_split: float = Field(0.2, gt=0, lt=1)
    """Share of each class held out for validation (stratified)."""
    seed: int = Field(42, ge=0)
    """Seed for the split, the new head's initialisation, batch order and augmentation."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """auto takes the GPU when there is one."""
    weights: str = "imagenet"
    """`imagenet` (torchvision's checkpoint, downloaded once), `none` (from scratch) or a state_dict file."""
    weights_style: Literal["auto", "keras", "torchvision"] = "auto"
    """Preprocessing and padding the weights need; auto detects Keras-converted files (folded BatchNorm)."""
    width_mult: float = Field(1.0, gt=0)
    """MobileNetV2 width multiplier (pretrained weights exist for 1.0)."""
    dropout: float = Field(0.2, ge=0, lt=1)
    """Dropout before the classifier."""
    balance: Literal["weights", "sampler", "none"] = "weights"
    """Class imbalance: weight the loss by inverse class frequency, sample classes evenly, or nothing."""
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    """Training-time augmentation."""
    patience: int = Field(5, ge=0)
    """Epochs without validation-loss improvement before a phase stops (0: never)."""
    max_retries: int = Field(5, ge=0)
    """CUDA out-of-memory recoveries (halving the batch) before giving up."""
    resume: bool = True
    """Continue an interrupted run with the same settings; False starts over."""
    run_dir: Path | None = None
    """Checkpoints and history; default runs/<output>/<hash of the settings>."""
    cache_dir: Path | None = None
    """Image cache folder (default $EDGEKIT_CACHE or .cache/edgekit)."""

    @field_validator("output")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    def style(self, state: dict[str, Any] | None) -> WeightStyle:
        """The weight style in use: asked for, implied by the source, or detected from the weights."""
        from edgekit.trainer.mobilenet import looks_keras_converted

        if self.weights_style != "auto":
            return STYLES[self.weights_style]
        if self.weights == "imagenet":
            return STYLES["torchvision"]
        if state is not None and not looks_keras_converted(state):
            return STYLES["torchvision"]
        return STYLES["keras"]  # Keras-converted files, and from scratch ([-1, 1] input suits any init)

    def run_key(self, prep: Prepared | None = None) -> str:
        """A hash of the settings that change what is trained (not where, on what, or how it is shown) and,
        given the prepared data, of the photos in its split (name, content hash, label): a run resumes only on
        the same training and validation photos (not after photos were added or edited, nor on another
        cross-validation fold)."""
        skip = {"device", "num_workers", "resume", "run_dir", "cache_dir", "max_retries"}
        data = self.model_dump(mode="json", exclude=skip)
        data["data"] = str(Path(self.data).resolve())
        if prep is not None:  # what each photo holds and is labelled, not only its name (an edited photo)
            h, y, parts = prep.images.hashes, prep.y, (prep.split.train, prep.split.val)
            data["split"] = [[(prep.files[i], h[i], int(y[i])) for i in part] for part in parts]
        return hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()[:10]


def base_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The base's layers in order: every leaf module of `features` (Keras's list without its input, pad and add
    layers)."""
    return [m for m in model.features.modules() if not list(m.children())]


def set_trainable(model: torch.nn.Module, unfreeze: int | None) -> int:
    """Freeze the base except its last `unfreeze` layers (None: everything trains); the head always trains.

    Returns:
        the number of trainable parameters.
    """
    layers = base_layers(model)
    for p in model.parameters():
        p.requires_grad = unfreeze is None
    for layer in layers[max(0, len(layers) - unfreeze):] if unfreeze else []:  # more than there are: all
        for p in layer.parameters():
            p.requires_grad = True
    for p in model.classifier.parameters():
        p.requires_grad = True
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def bn_frozen_train_mode(model: torch.nn.Module) -> None:
    """`model.train()`, but BatchNorm keeps its running statistics (eval mode); its affine part may train."""
    import torch

    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def load_weights(cfg: WasteConfig) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The pretrained state_dict the config asks for (None from scratch) and a description of its source."""
    from edgekit.trainer import mobilenet

    if cfg.weights == "imagenet":
        return mobilenet.download_imagenet(), f"imagenet ({mobilenet.TORCHVISION_URL})"
    if cfg.weights != "none":
        return mobilenet.read_state_dict(cfg.weights), str(Path(cfg.weights).resolve())
    return None, "none (from scratch)"


def build_model(cfg: WasteConfig, n_classes: int,
                weights: tuple[dict[str, torch.Tensor] | None, str] | None = None
                ) -> tuple[torch.nn.Module, WeightStyle, str]:
    """MobileNetV2 with the pretrained base the config asks for (`weights`: what `load_weights` returned, if
    already read); returns (model, style, weights description)."""
    from edgekit.trainer import mobilenet

    state, source = weights if weights is not None else load_weights(cfg)
    style = cfg.style(state)
    model = mobilenet.build(n_classes, width_mult=cfg.width_mult, padding=style.padding, dropout=cfg.dropout)
    if state is not None:
        mobilenet.load_backbone(model, state)
    return model, style, source


@dataclass
class Phase:
    """One training phase: its epochs, the head's and the unfrozen base's peak learning rates, and how many
    base layers train (None: all of them, when training from scratch)."""

    number: int
    epochs: int
    lr_head: float
    lr_base: float
    unfreeze: int | None


def _fit_phase(ph: Phase, net: torch.nn.Module, data: Any, val_logits: Any, prep: Prepared, cfg: WasteConfig,
               run_dir: Path, hooks: Hooks | None, train_all_bn: bool) -> FitResult:
    import torch
    import torch.nn.functional as F

    from edgekit.trainer.engine import FitConfig, Schedule, StepOutput, fit, resolve_device

    n = len(prep.labels)
    counts = np.bincount(data.y, minlength=n)
    weight = (torch.tensor(len(data.y) / (n * counts), dtype=torch.float32, device=resolve_device(cfg.device))
              if cfg.balance == "weights" else None)  # on the training device once, not copied every step
    y_val = torch.from_numpy(prep.y[prep.split.val])
    head_ids = {id(p) for p in net.classifier.parameters()}

    def step_fn(model: torch.nn.Module, batch: Any) -> StepOutput:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=cfg.label_smoothing)
        return StepOutput(loss=loss, n=len(y), correct=int((logits.argmax(1) == y).sum()))

    def eval_fn(model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        logits = val_logits(model, device)
        return {"val_loss": float(F.cross_entropy(logits, y_val)),
                "val_acc": float((logits.argmax(1) == y_val).float().mean())}

    def make_optimizer(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        head = [p for p in params if id(p) in head_ids]
        base = [p for p in params if id(p) not in head_ids]
        groups = [{"params": head, "lr": ph.lr_head}] + ([{"params": base, "lr": ph.lr_base}] if base else [])
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)

    def make_schedule(opt: torch.optim.Optimizer, steps_per_epoch: int, n_epochs: int) -> Schedule:
        cycle = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                    total_steps=max(1, steps_per_epoch * n_epochs),
                                                    pct_start=cfg.warmup)
        return Schedule(cycle, interval="step")

    fc = FitConfig(epochs=ph.epochs, batch_size=cfg.batch_size, seed=cfg.seed + ph.number, device=cfg.device,
                   sam_rho=cfg.sam, patience=cfg.patience, monitor="val_loss", mode="min", max_retries=cfg.max_retries,
                   resume=cfg.resume)
    return fit(net, data, step_fn, eval_fn, make_optimizer, make_schedule, fc, run_dir=run_dir, hooks=hooks,
               train_mode_fn=None if train_all_bn else bn_frozen_train_mode,
               task_config={"phase": ph.number, **cfg.model_dump(mode="json")})


def plan(cfg: WasteConfig) -> list[Phase]:
    """The phases: a new head on the frozen base, then the last `unfreeze` layers (from scratch: one phase
    training everything at lr)."""
    if cfg.weights == "none":
        return [Phase(1, cfg.epochs, cfg.lr, cfg.lr, None)]
    head = cfg.epochs if cfg.unfreeze == 0 else max(1, round(cfg.epochs * cfg.head_fraction))
    phases = [Phase(1, head, cfg.lr, cfg.lr, 0)]
    if cfg.unfreeze > 0 and cfg.epochs - head > 0:
        phases.append(Phase(2, cfg.epochs - head, cfg.lr, cfg.lr / 10, cfg.unfreeze))
    return phases


def _keep_best_phase(model: torch.nn.Module, results: list[FitResult]) -> None:
    """Fine-tuning can overfit a small dataset: when no phase-2 epoch beat phase 1 on validation loss,
    the bundle gets phase 1's best weights."""
    import torch

    scored = [r for r in results if r.best_metric is not None]
    if len(scored) < 2:
        return
    best = min(scored, key=lambda r: r.best_metric)
    if best is not scored[-1]:
        log.info("Phase 2 never beat phase 1's validation loss (%.4f vs %.4f); keeping phase 1's weights.",
                 scored[-1].best_metric, best.best_metric)
        model.load_state_dict(torch.load(best.best_model_path, map_location="cpu", weights_only=True))


def _inputs(cfg: WasteConfig, model: torch.nn.Module, prep: Prepared, pre: Preprocess,
            phases: list[Phase]) -> tuple[torch.nn.Module, Any, Any]:
    """What the phases train on: (network, training data, val-logits function). With cached views the network
    is the tail after the layers no phase trains, fed stored activations; otherwise the whole model, fed
    live-augmented photos."""
    from edgekit.trainer import waste_views
    from edgekit.trainer.engine import resolve_device

    device = resolve_device(cfg.device)
    deepest = [ph.unfreeze for ph in phases]
    n_views = 0
    if cfg.views and None not in deepest and not cfg.train_bn:
        set_trainable(model, max(deepest))
        cut = waste_views.first_trainable_block(model)
        model.to(device)
        n_views = waste_views.fit_views(model, cut, cfg.img_size, len(prep.y), len(prep.split.train), cfg.views)
        if n_views < cfg.views:
            log.warning("%d cached views of %d photos would pass %d GiB; using %s.", cfg.views, len(prep.y),
                        waste_views.MAX_BYTES >> 30, f"{n_views} views" if n_views else "live augmentation")
    if n_views:
        views = waste_views.build(prep, model, cut, pre, cfg.augment, n_views, cfg.seed, device, root=cfg.cache_dir)
        return (waste_views.Tail(model, cut), waste_views.ViewBatches(views, prep, cfg.balance == "sampler"),
                lambda net, dev: waste_views.predict_tail(net, views, prep.split.val, dev))
    data = PhotoBatches(prep, pre, cfg.augment, balanced=cfg.balance == "sampler")
    return model, data, lambda net, dev: predict(net, prep, prep.split.val, pre, dev)


def train(cfg: WasteConfig, hooks: Hooks | None = None, prep: Prepared | None = None) -> Bundle:
    """The whole command: prepare, train in phases, evaluate, write the bundle, print the verdict.

    `prep` (optional) is data already prepared, e.g. with another split (bench/waste_quality.py's folds)."""
    import torch

    from edgekit.console import console
    from edgekit.trainer import int8_grid, waste_bundle
    from edgekit.trainer.engine import resolve_device, seed_everything

    loaded = []  # a wrong --weights file is reported after the folder checks, before minutes of decoding

    if prep is None:
        prep = prepare(cfg, before_decoding=lambda: loaded.append(load_weights(cfg)))
    waste_bundle.print_data_summary(prep)
    seed_everything(cfg.seed)
    model, style, source = build_model(cfg, len(prep.labels), loaded[0] if loaded else None)
    # NHWC activations: about 2x faster depthwise convolutions on CPU (oneDNN), and faster with AMP on GPUs
    model = model.to(memory_format=torch.channels_last)
    int8_grid.enable(model, cfg.int8_grid)
    pre = style.preprocess(cfg.img_size, cfg.fit)
    phases = plan(cfg)
    net, data, val_logits = _inputs(cfg, model, prep, pre, phases)
    run_root = cfg.run_dir or Path("runs") / cfg.output / cfg.run_key(prep)
    results = []
    for ph in phases:
        n_params = set_trainable(model, ph.unfreeze)
        what = {None: "the whole network", 0: "a new head on the frozen base"}.get(
            ph.unfreeze, f"the last {ph.unfreeze} layers at lr {ph.lr_base:g} and the head")
        console.print(f"[bold]Phase {ph.number}[/]: training {what} ({n_params:,} parameters), "
                      f"{ph.epochs} epoch(s), head lr {ph.lr_head:g}", soft_wrap=True)
        result = _fit_phase(ph, net, data, val_logits, prep, cfg, run_root / f"phase{ph.number}", hooks,
                            train_all_bn=cfg.train_bn or ph.unfreeze is None)
        results.append(result)
    _keep_best_phase(model, results)
    int8_grid.bake(model)
    device = resolve_device(cfg.device)
    logits = predict(model.to(device), prep, prep.split.val, pre, device)
    bundle = waste_bundle.write_bundle(cfg, prep, model.cpu(), style, source, logits.argmax(1).numpy(), results)
    waste_bundle.print_result(bundle)
    return bundle
